"""wellpanel analysis: reads panel Data Packages, fits mixed-effects models, writes reports."""
