"""fmu's command line (thin: parsing and printing; the work is in core/ and training/)."""
