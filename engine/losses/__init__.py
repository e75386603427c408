"""DSR loss terms, one small module each, combined with the preset's weights in ``combined``."""
