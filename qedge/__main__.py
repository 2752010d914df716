from qedge.cli import main

main()
