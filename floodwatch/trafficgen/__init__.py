"""Attack and benign traffic generator: pcap files and live frames in network namespaces.

`frames_for(VectorSpec)` builds Ethernet frames for one vector (packets.py, vectors.py);
`write_pcap()` writes them with deterministic timestamps (pcapw.py); `send()` paces them out of a raw
AF_PACKET socket (send.py). The `floodwatch traffic` command is in cli.py.
"""
