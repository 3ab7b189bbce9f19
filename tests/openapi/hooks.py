# Schemathesis hooks for the OpenAPI test (crates/warren-cli/tests/openapi.rs), loaded through
# SCHEMATHESIS_HOOKS: image archives are bytes like any other, so they are sent as such.
import schemathesis

schemathesis.serializer.alias("application/x-tar", "application/octet-stream")
