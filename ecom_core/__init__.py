"""The ground package: configuration, the AWS client factory, the order-line event type, the
record -> CSV -> warehouse column contract and fault injection.

It imports no other package of the project (the import contract in pyproject.toml enforces it)
and ships in the Lambda zip beside handlers/. Standard library and boto3 only.
"""
