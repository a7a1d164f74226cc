"""Files in and out: images, parameter files, SVG, atomic writes, CSV, and plots."""
