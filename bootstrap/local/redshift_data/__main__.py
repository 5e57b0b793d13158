from bootstrap.local.redshift_data.server import main

main()
