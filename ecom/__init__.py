"""ecom-pipeline: command line, configuration and the embedded stack.

Kept import-light on purpose: `ecom.config` ships inside the Lambda zip.
"""
