# etcd_proto_strip.cmake - copy one of etcd's packaged .proto files without
# its Go-only options, so protoc-c can compile it (cmake -P; IN and OUT set).
#
# etcd's rpc.proto, kv.proto and auth.proto import gogoproto/gogo.proto (Go
# code generation options) and google/api/annotations.proto (the HTTP
# gateway's routes). Neither changes the wire format, and neither is packaged
# for C: this drops the two imports, every `option (gogoproto.*) = ...;` line
# and every `option (google.api.http) = { ... };` block, and leaves the rest
# byte for byte. A file whose text does not shrink by at least the imports is
# an unexpected version: the build stops rather than guess.
if(NOT DEFINED IN OR NOT DEFINED OUT)
  message(FATAL_ERROR "etcd_proto_strip: IN and OUT must be set")
endif()
file(READ "${IN}" text)
string(LENGTH "${text}" before)
string(REGEX REPLACE "import \"gogoproto/gogo.proto\";" "" text "${text}")
string(REGEX REPLACE "import \"google/api/annotations.proto\";" "" text "${text}")
string(REGEX REPLACE "option \\(gogoproto\\.[a-z_]+\\) = [a-z]+;" "" text "${text}")
# (a block may hold one level of nested braces: additional_bindings { ... })
string(REGEX REPLACE "option \\(google\\.api\\.http\\) = {([^{}]*{[^{}]*})*[^{}]*};" "" text "${text}")
string(REGEX REPLACE "\\[\\(gogoproto\\.[^]]*\\]" "" text "${text}")
string(LENGTH "${text}" after)
if(after EQUAL before)
  message(FATAL_ERROR "etcd_proto_strip: nothing to strip in ${IN} (an unexpected version?)")
endif()
if(text MATCHES "gogoproto|google\\.api")
  message(FATAL_ERROR "etcd_proto_strip: ${IN} still names gogoproto or google.api after stripping")
endif()
get_filename_component(dir "${OUT}" DIRECTORY)
file(MAKE_DIRECTORY "${dir}")
file(WRITE "${OUT}" "${text}")
