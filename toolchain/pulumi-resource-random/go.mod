// Wrapper module for the random provider (Terraform-bridged, plugin framework).
// Upstream provider/go.mod at v4.19.1 replaces:
//   - the `shim` module (a directory inside the provider repo, not in the module
//     zip): ./shim is our own module with the same path;
//   - hashicorp/terraform-plugin-sdk/v2 with Pulumi's fork.
// install-pulumi adds `require RANDOM_MODULE RANDOM_MODULE_VERSION` in a scratch
// copy, copies the provider module out of the module cache (main.go embeds a
// schema-embed.json that is generated, not committed) and replaces it with that copy.
module ai-meeting-infra/toolchain/pulumi-resource-random

go 1.26.6

replace (
	github.com/hashicorp/terraform-plugin-sdk/v2 => github.com/pulumi/terraform-plugin-sdk/v2 v2.0.0-20250923233607-7f1981c8674a
	github.com/terraform-providers/terraform-provider-random => github.com/hashicorp/terraform-provider-random v1.3.2-0.20260824155315-e1092b0cfc07
	github.com/terraform-providers/terraform-provider-random/shim => ./shim
)
