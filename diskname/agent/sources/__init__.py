"""Where device records come from: the sim guest kernel now, udev later."""
