from tri24es.cli import main

main()
