"""Task suites: load instances, build their environments, grade patches."""
