// Declaration shim: the part of MetalPerformanceShaders that csrc/metal uses, and
// nothing more, written from Apple's public documentation (developer.apple.com/
// documentation/metalperformanceshaders); see Foundation/Foundation.h for why.
// The real-SDK check (shared/tools/metal-sdk-check with MPS_FRAMEWORKS) confirms
// them against the macOS 12.0 SDK's MPS headers; each is listed with its page and
// header line in docs/metal-api.md.
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

@interface MPSVectorDescriptor : NSObject
+ (instancetype)vectorDescriptorWithLength:(NSUInteger)length dataType:(MPSDataType)dataType;
+ (instancetype)vectorDescriptorWithLength:(NSUInteger)length
                                   vectors:(NSUInteger)vectors
                               vectorBytes:(NSUInteger)vectorBytes
                                  dataType:(MPSDataType)dataType;
@end

@interface MPSMatrix : NSObject
- (instancetype)initWithBuffer:(id<MTLBuffer>)buffer
                        offset:(NSUInteger)offset
                    descriptor:(MPSMatrixDescriptor*)descriptor;
@end

@interface MPSVector : NSObject
- (instancetype)initWithBuffer:(id<MTLBuffer>)buffer
                        offset:(NSUInteger)offset
                    descriptor:(MPSVectorDescriptor*)descriptor;
@end

@interface MPSMatrixBinaryKernel : MPSKernel
@property(readwrite, nonatomic) NSUInteger batchStart;
@property(readwrite, nonatomic) NSUInteger batchSize;
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

@interface MPSMatrixVectorMultiplication : MPSMatrixBinaryKernel
- (instancetype)initWithDevice:(id<MTLDevice>)device
                     transpose:(BOOL)transpose
                          rows:(NSUInteger)rows
                       columns:(NSUInteger)columns
                         alpha:(double)alpha
                          beta:(double)beta;
- (void)encodeToCommandBuffer:(id<MTLCommandBuffer>)commandBuffer
                  inputMatrix:(MPSMatrix*)inputMatrix
                  inputVector:(MPSVector*)inputVector
                 resultVector:(MPSVector*)resultVector;
@end

// MPSNeuralNetwork
@interface MPSMatrixFullyConnected : MPSMatrixBinaryKernel
@property(readwrite, nonatomic) NSUInteger sourceNumberOfFeatureVectors;
@property(readwrite, nonatomic) NSUInteger sourceInputFeatureChannels;
@property(readwrite, nonatomic) NSUInteger sourceOutputFeatureChannels;
@property(readwrite, nonatomic) double alpha;
- (instancetype)initWithDevice:(id<MTLDevice>)device;
- (void)encodeToCommandBuffer:(id<MTLCommandBuffer>)commandBuffer
                  inputMatrix:(MPSMatrix*)inputMatrix
                 weightMatrix:(MPSMatrix*)weightMatrix
                   biasVector:(nullable MPSVector*)biasVector
                 resultMatrix:(MPSMatrix*)resultMatrix;
@end

#pragma clang assume_nonnull end
