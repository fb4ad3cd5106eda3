// Stand-in for torch's MPS stream (tests/objc_stubs/README.md).
#pragma once
#import <Metal/Metal.h>
namespace at::mps {
class MPSStream {
public:
    dispatch_queue_t queue() const;
    id<MTLComputeCommandEncoder> commandEncoder();
};
MPSStream *getCurrentMPSStream();
}
