"""The ground package: configuration, the AWS client factory, the order-line event type, the
record -> CSV -> warehouse column contract, fault injection and the hot paths' JSON codec.

It imports no other package of the project (the import contract in pyproject.toml enforces it)
and ships in the Lambda zip beside handlers/. Standard library and boto3 only (orjson where it
is installed: json_codec falls back to the standard library without it).
"""
