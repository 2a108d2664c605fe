from rungefit.cli import main

main()
