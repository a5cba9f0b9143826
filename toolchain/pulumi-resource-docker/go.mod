// Wrapper module for the docker provider (Terraform-bridged, SDKv2). Upstream
// provider/go.mod replaces github.com/terraform-providers/terraform-provider-docker
// with ../upstream (a git submodule of kreuzwerker/terraform-provider-docker v3.9.0
// plus patches 0001-0004); here that becomes kreuzwerker's module at the pinned
// commit. Pinned commit d7d7ff7f: its pseudo-version is not served by the proxy
// (only v0.0.0-20260916201441-96d331c98ff4 is), so the replace below names what is.
// Build tag: no_compose.
module ai-meeting-infra/toolchain/pulumi-resource-docker

go 1.26.6

replace (
	github.com/hashicorp/terraform-plugin-sdk/v2 => github.com/pulumi/terraform-plugin-sdk/v2 v2.0.0-20250923233607-7f1981c8674a
	github.com/terraform-providers/terraform-provider-docker => github.com/kreuzwerker/terraform-provider-docker v0.0.0-20260916201441-96d331c98ff4
)
