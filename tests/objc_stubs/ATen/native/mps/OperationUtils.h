#pragma once
// Stand-in (tests/objc_stubs/README.md): metal/*.mm use nothing from it.
