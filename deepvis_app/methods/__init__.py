"""Attribution methods beyond the live rules: the CAM family, Integrated Gradients, SmoothGrad/VarGrad, LRP."""
