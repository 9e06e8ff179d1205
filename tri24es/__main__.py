import sys

try:  # a Ctrl-C between the import and the call: see tri24es.cli.main
    from tri24es.cli import main
except KeyboardInterrupt:
    sys.exit(130)

main()
