"""Fast unit tests of pure logic: no sshd, no browser, no subprocess runtime."""
