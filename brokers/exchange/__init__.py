"""The local exchange: the sim engine served over the wire APIs the real SDKs speak."""
