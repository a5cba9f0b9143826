// Wrapper module for the tls provider (Terraform-bridged, plugin framework).
// Same shape as ../pulumi-resource-random: own shim module, Pulumi's fork of
// terraform-plugin-sdk/v2, provider module copied out of the module cache so
// schema-embed.json can be generated next to main.go.
module ai-meeting-infra/toolchain/pulumi-resource-tls

go 1.26.6

replace (
	github.com/hashicorp/terraform-plugin-sdk/v2 => github.com/pulumi/terraform-plugin-sdk/v2 v2.0.0-20250923233607-7f1981c8674a
	github.com/hashicorp/terraform-provider-tls/shim => ./shim
)
