"""The command line: arguments and output only, over the library.

main.py       `collector`: parse, run, and turn a person's mistakes into a message and exit 2
parser.py     every command's arguments, in one place
options.py    what commands share: settings (environment, SSM, `.env`) and argument types
run.py        run, check-config, status, fetch-env
audit.py      audit
history.py    import, verify
table.py      compact
feed.py       emulate, and the tapes the local feed serves
demo.py       demo: the feed and a collector together, a minute marked; or an archive imported
progress.py   an import's progress on a terminal
"""
