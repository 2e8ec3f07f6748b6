// JNI entry points that DJL 0.31.1 (bundled by ML Commons 2.19) calls but the newest pytorch-jni build for
// libtorch 1.13.1 on Maven Central (1.13.1-0.22.0) predates. This library is loaded in its place; it lists the real
// 0.22.0 JNI as a dependency, so the JVM resolves every other native method there (dlsym searches dependencies).
// Tensor handles are pointers to torch::Tensor, as in DJL's JNI layer.
#include <jni.h>
#include <torch/torch.h>

extern "C" {

JNIEXPORT jboolean JNICALL Java_ai_djl_pytorch_jni_PyTorchLibrary_torchIsContiguous(JNIEnv*, jobject, jlong handle) {
  return reinterpret_cast<torch::Tensor*>(handle)->is_contiguous() ? JNI_TRUE : JNI_FALSE;
}

JNIEXPORT jlong JNICALL Java_ai_djl_pytorch_jni_PyTorchLibrary_torchToContiguous(JNIEnv*, jobject, jlong handle) {
  auto* result = new torch::Tensor(reinterpret_cast<torch::Tensor*>(handle)->contiguous());
  return reinterpret_cast<jlong>(result);
}

JNIEXPORT jobject JNICALL Java_ai_djl_pytorch_jni_PyTorchLibrary_torchDirectByteBuffer(JNIEnv* env, jobject, jlong handle) {
  auto* tensor = reinterpret_cast<torch::Tensor*>(handle);
  return env->NewDirectByteBuffer(tensor->data_ptr(), static_cast<jlong>(tensor->nbytes()));
}

}
