"""Lambda handlers. Standard library, boto3 and this package only: they ship as a zip."""
