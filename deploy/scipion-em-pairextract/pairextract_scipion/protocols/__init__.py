from .protocol_extract_pairs import ProtPairextractExtractPairs  # noqa: F401
