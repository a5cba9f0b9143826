def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "toolchain: needs the locally built Pulumi toolchain (scripts/install-pulumi) and a Docker engine",
    )
