def pytest_addoption(parser):
    parser.addoption("--size", type=int, default=10**7, help="elements per benchmark input")
