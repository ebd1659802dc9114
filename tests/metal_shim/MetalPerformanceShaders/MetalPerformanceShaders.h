// Declaration shim: the part of MetalPerformanceShaders that csrc/metal uses, and
// nothing more, written from Apple's public documentation (developer.apple.com/
// documentation/metalperformanceshaders); see Foundation/Foundation.h for why.
// The SDK subset the real-SDK check uses has no MPS, so these declarations are
// the only Linux check of the MPS calls; each is listed with its page in the
// Metal backend's review notes.
#pragma once

#import <Metal/Metal.h>

#pragma clang assume_nonnull begin

typedef NS_ENUM(uint32_t, MPSDataType){
    MPSDataTypeFloatBit = 0x10000000,
    MPSDataTypeFloat32 = MPSDataTypeFloatBit | 32,
    MPSDataTypeFloat16 = MPSDataTypeFloatBit | 16,
};

extern "C" BOOL MPSSupportsMTLDevice(id<MTLDevice> _Nullable device);

@interface MPSKernel : NSObject <NSCopying>
@end

@interface MPSMatrixDescriptor : NSObject
+ (instancetype)matrixDescriptorWithRows:(NSUInteger)rows
                                 columns:(NSUInteger)columns
                                matrices:(NSUInteger)matrices
                                rowBytes:(NSUInteger)rowBytes
                             matrixBytes:(NSUInteger)matrixBytes
                                dataType:(MPSDataType)dataType;
@end

@interface MPSMatrix : NSObject
- (instancetype)initWithBuffer:(id<MTLBuffer>)buffer descriptor:(MPSMatrixDescriptor*)descriptor;
@end

@interface MPSMatrixMultiplication : MPSKernel
@property(readwrite, nonatomic) NSUInteger batchStart;
@property(readwrite, nonatomic) NSUInteger batchSize;
- (instancetype)initWithDevice:(id<MTLDevice>)device
                 transposeLeft:(BOOL)transposeLeft
                transposeRight:(BOOL)transposeRight
                    resultRows:(NSUInteger)resultRows
                 resultColumns:(NSUInteger)resultColumns
               interiorColumns:(NSUInteger)interiorColumns
                         alpha:(double)alpha
                          beta:(double)beta;
- (void)encodeToCommandBuffer:(id<MTLCommandBuffer>)commandBuffer
                   leftMatrix:(MPSMatrix*)leftMatrix
                  rightMatrix:(MPSMatrix*)rightMatrix
                 resultMatrix:(MPSMatrix*)resultMatrix;
@end

#pragma clang assume_nonnull end
