"""eDonkey2000 / eMule codecs: sans-IO, bytes in, values or events out (house rule 1).

Sources: the aMule source (github amule-project/amule: src/Packet.cpp, src/EMSocket.cpp,
src/Tag.cpp, src/BaseClient.cpp, src/ClientTCPSocket.cpp, src/DownloadClient.cpp,
src/EncryptedStreamSocket.cpp, src/include/protocol/...), which follows eMule, and Kulbak &
Bickson, "The eMule Protocol Specification" (2005). See docs/ed2k.md.
"""
