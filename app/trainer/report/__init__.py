"""The training report: a static HTML page with SVG charts, from plain data. Pure."""
