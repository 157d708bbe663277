"""Building blocks every area uses and that use no area: the outbox base, names of env secrets."""
