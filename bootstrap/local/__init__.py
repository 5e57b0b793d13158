"""What runs only on the local stacks; never shipped in a Lambda zip."""
