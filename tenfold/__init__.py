"""tenfold: one Lightning experiment platform for ten computer-vision methods."""
