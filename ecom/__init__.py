"""ecom-pipeline's command line (`ecom --help`): the top layer, imported by nobody."""
