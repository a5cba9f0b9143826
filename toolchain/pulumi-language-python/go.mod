// Wrapper module for the Python language host. Upstream's go.mod replaces
// github.com/pulumi/pulumi/sdk/v3 and pkg/v3 with local directories of the
// monorepo; here they become requirements on the CLI's tag. install-pulumi adds
// the requirement on the language host module itself (LANGUAGE_PYTHON_MODULE_VERSION
// in ../versions.env) with `go mod edit` in a scratch copy.
module ai-meeting-infra/toolchain/pulumi-language-python

go 1.26.6

require (
	github.com/pulumi/pulumi/pkg/v3 v3.274.1
	github.com/pulumi/pulumi/sdk/v3 v3.274.1
)

replace github.com/atotto/clipboard => github.com/tgummerer/clipboard v0.0.0-20241001131231-d02d263e614e
