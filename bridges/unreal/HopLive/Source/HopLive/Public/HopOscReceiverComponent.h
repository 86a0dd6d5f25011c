// Receives hop-live's native OSC stream (hop-live --osc HOST:PORT) and poses a UPoseableMeshComponent.
//
// Written against the documented UE5 API (FUdpSocketBuilder, FUdpSocketReceiver,
// UPoseableMeshComponent) but NOT compiled in Unreal by the hop-live project:
// see bridges/unreal/README.md. The OSC parsing (HopOscParser.h) is plain C++ and
// is compiled and tested outside the engine against bridges/test_vectors/native_osc.json.
#pragma once

#include "CoreMinimal.h"
#include "Components/ActorComponent.h"
#include "HAL/CriticalSection.h"
#include "Serialization/ArrayReader.h"
#include "HopOscParser.h"
#include "HopOscReceiverComponent.generated.h"

class FSocket;
class FUdpSocketReceiver;
class UPoseableMeshComponent;
struct FIPv4Endpoint;

UCLASS(ClassGroup = (Animation), meta = (BlueprintSpawnableComponent))
class HOPLIVE_API UHopOscReceiverComponent : public UActorComponent
{
	GENERATED_BODY()

public:
	UHopOscReceiverComponent();

	// UDP port given to hop-live --osc HOST:PORT.
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "hop-live")
	int32 Port = 9000;

	// Speaker / channel to follow (/hop/stream).
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "hop-live")
	int32 Stream = 0;

	// 0 = follow every frame exactly; higher = smoother and later.
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "hop-live", meta = (ClampMin = "0.0", ClampMax = "0.95"))
	float Smoothing = 0.f;

	// Mesh to pose; if unset, the first PoseableMeshComponent of the owner. It must be in its reference pose
	// (T-pose or A-pose) at BeginPlay, when the rest rotations are captured.
	UPROPERTY(EditAnywhere, BlueprintReadWrite, Category = "hop-live")
	TObjectPtr<UPoseableMeshComponent> Mesh;

	// Bones of the mesh, UE5 mannequin names by default (profiles/rigs/ue5_mannequin.toml).
	UPROPERTY(EditAnywhere, Category = "hop-live|Bones") FName Spine = "spine_01";
	UPROPERTY(EditAnywhere, Category = "hop-live|Bones") FName Neck = "neck_01";
	UPROPERTY(EditAnywhere, Category = "hop-live|Bones") FName Head = "head";
	UPROPERTY(EditAnywhere, Category = "hop-live|Bones") FName ClavicleL = "clavicle_l";
	UPROPERTY(EditAnywhere, Category = "hop-live|Bones") FName UpperArmL = "upperarm_l";
	UPROPERTY(EditAnywhere, Category = "hop-live|Bones") FName LowerArmL = "lowerarm_l";
	UPROPERTY(EditAnywhere, Category = "hop-live|Bones") FName HandL = "hand_l";
	UPROPERTY(EditAnywhere, Category = "hop-live|Bones") FName ClavicleR = "clavicle_r";
	UPROPERTY(EditAnywhere, Category = "hop-live|Bones") FName UpperArmR = "upperarm_r";
	UPROPERTY(EditAnywhere, Category = "hop-live|Bones") FName LowerArmR = "lowerarm_r";
	UPROPERTY(EditAnywhere, Category = "hop-live|Bones") FName HandR = "hand_r";

	// The newest frame, for Blueprints.
	UPROPERTY(BlueprintReadOnly, Category = "hop-live") int32 FrameIndex = -1;
	UPROPERTY(BlueprintReadOnly, Category = "hop-live") bool bSpeaking = false;
	UPROPERTY(BlueprintReadOnly, Category = "hop-live") FString SkeletonName;
	UPROPERTY(BlueprintReadOnly, Category = "hop-live") TArray<float> DirVec;  // TED axes, as sent
	UPROPERTY(BlueprintReadOnly, Category = "hop-live") int32 FramesReceived = 0;
	UPROPERTY(BlueprintReadOnly, Category = "hop-live") int32 PacketsRejected = 0;

	virtual void TickComponent(float DeltaTime, ELevelTick TickType, FActorComponentTickFunction* ThisTickFunction) override;

protected:
	virtual void BeginPlay() override;
	virtual void EndPlay(const EEndPlayReason::Type EndPlayReason) override;

private:
	struct FDrive
	{
		FName Bone;
		FName To;       // rest direction points at this bone, or is Fixed (actor space) when None
		FVector Fixed;
		int32 Parent;   // nearest driven ancestor in Drives, INDEX_NONE for none
		FQuat RestRotation = FQuat::Identity;  // relative to the actor
		FVector RestDirection = FVector::ZeroVector;
		FQuat Delta = FQuat::Identity;
	};

	void OnPacket(const FArrayReaderPtr& Data, const FIPv4Endpoint& From);
	void ApplyPose(const HopOsc::FFrame& Frame);

	TArray<FDrive> Drives;
	FSocket* Socket = nullptr;
	FUdpSocketReceiver* Receiver = nullptr;

	FCriticalSection PendingLock;
	HopOsc::FFrame Pending;
	bool bHasPending = false;
	int32 RejectedOnThread = 0;  // under PendingLock
	int32 ReceivedOnThread = 0;
};
