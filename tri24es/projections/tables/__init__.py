"""What a reader of each view table needs: its row type, its columns, and the reads and SQL
that more than one caller shares.

Apart from the folds (``projections/queue.py`` and the others), which name the events they
apply: reading the views this way loads no event catalog, which is most of the start-up of a
read command (``status``, ``spend``, ``tasks list``).
"""
