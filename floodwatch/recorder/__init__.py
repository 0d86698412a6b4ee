"""The recorder: a capture file per incident (ring, writer, retention) and its forensic dissection."""
