"""Attack and benign traffic generator: pcap files and live frames in network namespaces.

`frames_for(VectorSpec)` builds Ethernet frames for one vector (packets.py, vectors.py);
`paced()` gives them deterministic timestamps (pcapw.py) for `floodwatch.capture.pcapwrite.write_pcap()`;
`send()` paces them out of a raw AF_PACKET socket (send.py). The `floodwatch traffic` command is in cli.py.
"""
