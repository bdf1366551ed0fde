from crowdpatch.cli import main

main()
