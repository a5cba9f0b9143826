// Wrapper module for the command provider (not bridged: no replaces upstream).
// install-pulumi adds `require COMMAND_MODULE COMMAND_MODULE_VERSION` from
// ../versions.env in a scratch copy and builds COMMAND_PACKAGE.
module ai-meeting-infra/toolchain/pulumi-resource-command

go 1.26.6
