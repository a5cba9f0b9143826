"""ai-meeting policy pack: pure rules (`rules`), pulumi-policy wrappers (`pack`), test helpers (`testing`)."""
