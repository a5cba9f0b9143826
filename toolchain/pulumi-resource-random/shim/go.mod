// Stand-in for the provider repo's provider/shim module (see ../go.mod). Its path
// must sit under the upstream provider's module path so that it may import the
// upstream's internal/provider package.
module github.com/terraform-providers/terraform-provider-random/shim

go 1.26.6

require github.com/terraform-providers/terraform-provider-random v0.0.0

// Only the main module's replaces apply: ../go.mod repeats this one.
replace github.com/terraform-providers/terraform-provider-random => github.com/hashicorp/terraform-provider-random v1.3.2-0.20260824155315-e1092b0cfc07
