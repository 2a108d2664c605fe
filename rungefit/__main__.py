from rungefit.cli.app import main

main()
