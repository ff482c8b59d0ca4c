"""The ``threadkeep`` command line (needs ``pip install 'threadkeep[cli]'``)."""
