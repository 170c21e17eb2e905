from tapers.cli.main import main

main()
