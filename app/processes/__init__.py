"""One module per OS process: ``arbiter run`` (``run``), ``arbiter demo`` (``demo``),
``arbiter trainer`` (``trainer``) and ``arbiter simulate`` (``simulate``), with the
shutdown clock they share (``shutdown``)."""
