"""The command executor's pure logic: split, validate, run, remember and undo mitigation commands.

A command is data from the network: it is split into argv without a shell, parsed by a grammar per
program into a typed plan, and re-rendered from that plan, so only validated tokens reach a program.
"""
