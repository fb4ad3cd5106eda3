// Stand-in for torch's MPS device (tests/objc_stubs/README.md).
#pragma once
#import <Metal/Metal.h>
namespace at::mps {
class MPSDevice { public: static MPSDevice *getInstance(); id<MTLDevice> device(); };
}
