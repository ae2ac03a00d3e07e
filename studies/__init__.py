"""Studies: how the paper's results move with the choices it leaves open
(``python -m studies.<name>``), read from trained runs. Not part of the
installed package."""
