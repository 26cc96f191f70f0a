"""Where device records come from: udev on a real guest, the sim guest kernel in tests."""
