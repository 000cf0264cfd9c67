"""The wheel as users install it: the slim install, the extras, the data it ships."""
