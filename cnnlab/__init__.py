"""cnnlab: explore classic ConvNets and transfer learning. A plain library; the dashboard sits on top."""

__version__ = "0.1.0"
