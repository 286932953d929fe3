from nrqc.cli import main

main()
